//! The one table of tolerances used by the tests, each with the reason for its value.
