//! Running in production: the worker daemon and its shutdown, `status`, `verify`, metrics and
//! the HTTP endpoints, and logging.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod shutdown;
pub mod status;
pub mod verify;
pub mod worker;
