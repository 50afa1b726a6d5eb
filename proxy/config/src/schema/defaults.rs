//! Defaults shared by several tables.

/// Serde's default for switches that are on unless turned off.
pub(super) fn default_true() -> bool {
    true
}
