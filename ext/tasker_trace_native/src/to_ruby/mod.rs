//! Core values to new Ruby objects: values and the store's records
//! ([`values`]), lifecycle runs and stats ([`lifecycle`]).

pub mod lifecycle;
pub mod values;
