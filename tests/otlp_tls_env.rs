//! The platform's certificate store honours `SSL_CERT_FILE`: with it naming
//! the test CA, https works with no CA configured in the target. Its own test
//! binary, as it sets a process-wide variable.

mod otlp_support;

use std::time::Duration;

use otlp_support::tls::*;
use otlp_support::*;
use rcgen::ExtendedKeyUsagePurpose;
use tasker_trace_core::export::PushOutcome;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::transport::{Cancel, Destination, Transport};

#[test]
fn ssl_cert_file_is_honoured_by_the_platform_store() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(ExtendedKeyUsagePurpose::ServerAuth, false);
    let collector =
        Collector::start_tls(vec![Reply::status(200)], server_config(&cert, &key, None));
    let files = Files::new();
    let bundle = files.write("bundle.pem", &ca.cert.pem());
    // The only test in this binary: no other thread reads the environment.
    std::env::set_var("SSL_CERT_FILE", &bundle);
    let transport = Transport::new(Destination {
        timeout: Duration::from_secs(5),
        ..Destination::new(&collector.url)
    })
    .unwrap();
    let b = Backend::new("h");
    finished_task(&b, 1);
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    std::env::remove_var("SSL_CERT_FILE");
    assert!(
        matches!(out, PushOutcome::Sent { records: 1, .. }),
        "{out:?}"
    );
    assert_eq!(collector.requests().len(), 1);
}
