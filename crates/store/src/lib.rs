//! confab-store (placeholder, being written)
