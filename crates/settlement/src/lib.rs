//! confab-settlement (placeholder, being written)
