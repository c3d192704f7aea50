pub mod cluster;
pub mod dlq;
pub mod local;
pub mod run;
pub mod train;
pub mod worker;
