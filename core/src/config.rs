//! Configuration. (Filled in by the config work.)
