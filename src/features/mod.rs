//! Feature definitions (`sma(50)`, `ema(50) as real`) and the kernels that compute them.
//!
//! Kernels are plain structs with no knowledge of the dataflow: the window operator feeds them
//! scores in row order and reads one value back per row.

mod definition;
mod kernel;

pub use definition::{ColumnType, DefinitionError, FeatureDef, Kind};
pub use kernel::{Ema, Kernel, Sma};

/// Feature values of one row (`None` is SQL NULL); inline for the usual handful of features.
pub type FeatureValues = smallvec::SmallVec<[Option<f64>; 4]>;
