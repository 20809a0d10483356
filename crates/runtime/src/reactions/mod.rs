//! Built-in reactions.

mod ndjson_log;
mod view;

pub use ndjson_log::NdjsonLog;
pub use view::MaterializedView;
