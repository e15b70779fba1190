//! Integration tests: the real server on port 0, wiremock for SEKOIA.IO and the chat tools.

mod access;
mod cli;
mod crashes;
mod delivery;
mod durability;
mod enrichment;
mod faults;
mod ha;
mod helpers;
mod hostile;
mod ingest;
mod metrics;
mod operations;
mod reload;
mod routing;
mod secrets;
