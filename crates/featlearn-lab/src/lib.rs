//! featlearn-lab: experiments over the `featlearn` science crate: configuration, the method
//! registry, the trial runner (sweeps, resume, shards), safe writes of results folders, records and summaries, merge and progress of shards, reports, plots and `.npy`
//! export.

pub mod bench;
pub mod config;
pub mod export;
pub mod files;
pub mod merge;
pub mod methods;
pub mod plots;
pub mod records;
pub mod registry;
pub mod report;
pub mod runner;
pub mod shards;
