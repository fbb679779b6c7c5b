//! Test support: the namespace lab (`lab`), real DNS servers (`dns`), the external programs the
//! tests run (`tools`), the differential test's generators (`gen`) and its reader of a loaded
//! program's counters and DNS copies (`probe`).

pub mod deploy;
pub mod dns;
pub mod r#gen;
pub mod https;
pub mod lab;
pub mod probe;
pub mod render;
pub mod static_http;
pub mod tools;
