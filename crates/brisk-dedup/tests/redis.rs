//! placeholder while the redis module is written
