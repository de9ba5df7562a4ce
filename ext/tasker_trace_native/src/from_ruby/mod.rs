//! Ruby values to core values: payloads, event names and trace keys
//! ([`convert`]), published lifecycle events ([`lifecycle_convert`], with
//! the [`lifecycle_read_plan`] of which payload keys they read), and every
//! setting's check ([`setting_checks`]).

pub mod convert;
pub mod lifecycle_convert;
pub mod lifecycle_read_plan;
pub mod setting_checks;
