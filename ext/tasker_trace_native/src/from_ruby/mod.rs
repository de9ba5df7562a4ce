//! Ruby values to core values: payloads, event names and trace keys
//! ([`convert`]), published lifecycle events ([`lifecycle_convert`], with
//! the [`lifecycle_read_plan`] of which payload keys they read, [`lifecycle_repeat`]:
//! the cheap read that tells a repeated step event, and
//! [`lifecycle_values`]: Hash and Array values, bounded and filtered), and every
//! setting's check ([`setting_checks`]).

pub mod convert;
pub mod lifecycle_convert;
pub mod lifecycle_read_plan;
pub mod lifecycle_repeat;
pub mod lifecycle_values;
pub mod setting_checks;
