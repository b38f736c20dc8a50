//! placeholder; helper A
