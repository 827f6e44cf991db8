//! Schema pieces shared by the CRDs: patterns and CEL rules the API server
//! enforces, so a bad object is refused by `kubectl apply` naming the field.

/// A byte rate such as `100MiB/s` or `1.5GiB` (no sign: negative rates are refused).
pub const RATE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(B|[KMGT]i?B)?(/s)?$";
/// A byte size such as `4MiB`.
pub const SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(B|[KMGT]i?B)?$";
/// A `|`-separated location, most general first (`eu|fra|rack-7`).
pub const LOCATION_PATTERN: &str = r"^[A-Za-z0-9._-]+(\|[A-Za-z0-9._-]+)*$";
/// A task id: 64 lowercase hex digits.
pub const TASK_ID_PATTERN: &str = r"^[0-9a-f]{64}$";
/// An http(s) URL.
pub const URL_PATTERN: &str = r"^https?://[^\s]+$";

/// Every list element must be a valid regular expression: CEL's `matches`
/// fails on an invalid pattern, which the API server reports for the field.
/// (`x || true` would not do: CEL's `||` absorbs an error when the other side
/// is true; here both sides fail together.)
pub const REGEX_LIST_RULE: &str = "self.all(h, ''.matches(h) || !''.matches(h))";
/// Every list element must be a CIDR such as 10.0.0.0/8 (Kubernetes >= 1.31 CEL).
pub const CIDR_LIST_RULE: &str = "self.all(c, isCIDR(c))";
