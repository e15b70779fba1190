//! Integration tests: the real server on port 0, wiremock for SEKOIA.IO and the chat tools.

mod access;
mod chatapp;
mod cli;
mod contrib;
mod crashes;
mod delivery;
mod docs;
mod durability;
mod enrichment;
mod faults;
mod ha;
mod helpers;
mod hostile;
mod ingest;
mod metrics;
mod never_lost;
mod operations;
mod reload;
mod routing;
mod secrets;
mod storms;
mod targets;
