//! The connector ABI shared by the Lodestar host and its plugins (filled in by the plugin issue).
