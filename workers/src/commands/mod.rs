pub mod autoscale;
pub mod cluster;
pub mod dlq;
pub mod local;
pub mod run;
pub mod selftrain;
pub mod train;
pub mod worker;
