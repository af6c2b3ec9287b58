//! Feature definitions (`sma(50)`, `ema(50) as real`, `sma(50) by state`), the kernels that
//! compute them and their windows (global or per key).
//!
//! Kernels are plain structs with no knowledge of the dataflow: the window operator feeds them
//! scores in row order and reads one value back per row.

mod definition;
mod kernel;
mod window;

pub use definition::{ColumnType, DefinitionError, FeatureDef, Kind};
pub use kernel::{Ema, Kernel, Sma};
pub use window::Window;

/// Feature values of one row (`None` is SQL NULL); inline for the usual handful of features.
pub type FeatureValues = smallvec::SmallVec<[Option<f64>; 4]>;
