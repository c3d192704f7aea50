pub mod cluster;
pub mod local;
pub mod run;
pub mod worker;
