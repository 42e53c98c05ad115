//! Fixtures for end-to-end tests on the local real stack.
