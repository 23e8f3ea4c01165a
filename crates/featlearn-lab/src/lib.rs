//! featlearn-lab: experiments over the `featlearn` science crate: configuration, the trial
//! runner, records and summaries, and `.npy` export.

pub mod config;
pub mod export;
pub mod records;
pub mod runner;
