pub mod resolve;
pub mod status;
