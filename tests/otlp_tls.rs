//! https: receivers on 127.0.0.1 speaking TLS (rustls with ring, on a std
//! thread) with certificates from a test CA made at test time (rcgen).

mod otlp_support;

use std::time::Duration;

use otlp_support::tls::*;
use otlp_support::*;
use rcgen::{ExtendedKeyUsagePurpose, KeyPair};
use tasker_trace_core::export::PushOutcome;
use tasker_trace_core::model::backend::Backend;
use tasker_trace_core::transport::{Cancel, Destination, Tls, Transport};

fn store() -> Backend {
    let b = Backend::new("h");
    for i in 1..=2 {
        finished_task(&b, i);
    }
    b
}

fn push(url: &str, tls: Tls) -> (PushOutcome, Backend) {
    let transport = Transport::new(Destination {
        timeout: Duration::from_secs(5),
        tls,
        ..Destination::new(url)
    })
    .expect("transport");
    let b = store();
    let out = push_finished(&b, &resource(), &transport, &Cancel::for_current_thread());
    (out, b)
}

fn ca_only(files: &Files, ca: &Ca) -> Tls {
    let path = files.write("ca.pem", &ca.cert.pem());
    Tls::from_files(Some(&path), None, None).unwrap()
}

/// A failure after one attempt, not retried; its error.
fn failed_once(out: &PushOutcome) -> String {
    match out {
        PushOutcome::Failed {
            records,
            attempts,
            status,
            error,
            ..
        } => {
            assert_eq!((*records, *attempts, *status), (2, 1, None), "{error}");
            error.clone()
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn https_fails_without_the_ca_and_succeeds_with_it() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(ExtendedKeyUsagePurpose::ServerAuth, false);
    let collector =
        Collector::start_tls(vec![Reply::status(200)], server_config(&cert, &key, None));
    assert!(collector.url.starts_with("https://127.0.0.1:"));

    // The platform's store does not know the test CA.
    let (out, b) = push(&collector.url, Tls::default());
    let error = failed_once(&out);
    assert!(error.contains(&collector.url), "{error}");
    assert!(error.contains("not signed by a trusted CA"), "{error}");
    assert_eq!(b.len(), 2, "the traces are kept");
    // An endpoint's password stays out of the message.
    let with_password = collector
        .url
        .replacen("https://", "https://otel:s3cret@", 1);
    let error = failed_once(&push(&with_password, Tls::default()).0);
    assert!(
        error.contains(&collector.url.replacen("https://", "https://otel:***@", 1)),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");

    let files = Files::new();
    let (out, b) = push(&collector.url, ca_only(&files, &ca));
    assert!(
        matches!(
            out,
            PushOutcome::Sent {
                records: 2,
                spans: 4,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(b.is_empty());
    let got = collector.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].span_count(), 4);
    assert_eq!(
        got[0].header("content-type"),
        Some("application/x-protobuf")
    );
}

#[test]
fn a_configured_ca_is_the_only_one_trusted() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let (cert, key) = ca.issue(ExtendedKeyUsagePurpose::ServerAuth, false);
    let collector =
        Collector::start_tls(vec![Reply::status(200)], server_config(&cert, &key, None));
    let files = Files::new();
    let (out, _) = push(&collector.url, ca_only(&files, &other));
    let error = failed_once(&out);
    assert!(error.contains("not signed by a trusted CA"), "{error}");
    assert!(collector.requests().is_empty());
}

#[test]
fn a_server_certificate_with_the_ca_flag_is_refused_in_plain_words() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(ExtendedKeyUsagePurpose::ServerAuth, true);
    let collector =
        Collector::start_tls(vec![Reply::status(200)], server_config(&cert, &key, None));
    let files = Files::new();
    let (out, _) = push(&collector.url, ca_only(&files, &ca));
    let error = failed_once(&out);
    assert!(error.contains(&collector.url), "{error}");
    assert!(
        error.contains("is a CA certificate") && error.contains("CA:TRUE"),
        "{error}"
    );
}

#[test]
fn mtls_needs_a_client_certificate_signed_by_the_servers_ca() {
    let ca = Ca::new("test CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = ca.issue(ExtendedKeyUsagePurpose::ServerAuth, false);
    let collector = Collector::start_tls(
        vec![Reply::status(200)],
        server_config(&cert, &key, Some(&client_ca)),
    );
    let files = Files::new();
    let ca_path = files.write("ca.pem", &ca.cert.pem());
    let (client, client_key) = client_ca.issue(ExtendedKeyUsagePurpose::ClientAuth, false);
    let client_path = files.write("client.pem", &client.pem());

    // No client certificate.
    let (out, b) = push(&collector.url, ca_only(&files, &ca));
    let error = failed_once(&out);
    assert!(error.contains("client certificate"), "{error}");
    assert_eq!(b.len(), 2);

    // One the server's client CA did not sign.
    let (stranger, stranger_key) = ca.issue(ExtendedKeyUsagePurpose::ClientAuth, false);
    let tls = Tls::from_files(
        Some(&ca_path),
        Some(&files.write("stranger.pem", &stranger.pem())),
        Some(&files.write("stranger.key", &stranger_key.serialize_pem())),
    )
    .unwrap();
    let error = failed_once(&push(&collector.url, tls).0);
    assert!(error.contains("TLS"), "{error}");
    assert!(collector.requests().is_empty(), "nothing got through");

    // PKCS#8 and SEC1 keys.
    let pkcs8 = files.write("client.pk8.pem", &client_key.serialize_pem());
    assert!(std::fs::read_to_string(&pkcs8)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    let sec1 = files.write("client.sec1.pem", &sec1_pem(&client_key));
    for key_path in [&pkcs8, &sec1] {
        let tls = Tls::from_files(Some(&ca_path), Some(&client_path), Some(key_path)).unwrap();
        let (out, b) = push(&collector.url, tls);
        assert!(
            matches!(out, PushOutcome::Sent { records: 2, .. }),
            "{key_path}: {out:?}"
        );
        assert!(b.is_empty());
    }
    assert_eq!(collector.requests().len(), 2);
}

#[test]
fn a_client_key_that_does_not_match_its_certificate_is_refused_up_front() {
    let ca = Ca::new("test CA");
    let (client, _) = ca.issue(ExtendedKeyUsagePurpose::ClientAuth, false);
    let other_key = KeyPair::generate().unwrap();
    let files = Files::new();
    let tls = Tls::from_files(
        None,
        Some(&files.write("client.pem", &client.pem())),
        Some(&files.write("other.key", &other_key.serialize_pem())),
    )
    .unwrap();
    let err = Transport::new(Destination {
        tls,
        ..Destination::new("https://127.0.0.1:1/v1/traces")
    })
    .unwrap_err();
    assert!(err.contains("cannot be used together"), "{err}");
    // A certificate where the key should be.
    let tls = Tls::from_files(
        None,
        Some(&files.write("c.pem", &client.pem())),
        Some(&files.write("k.pem", &client.pem())),
    )
    .unwrap();
    let err = Transport::new(Destination {
        tls,
        ..Destination::new("https://127.0.0.1:1/v1/traces")
    })
    .unwrap_err();
    assert!(err.contains("client key file"), "{err}");
}
