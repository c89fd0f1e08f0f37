//! confab
