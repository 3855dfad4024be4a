//! Format stability across versions (SPEC 1 and 8): the key string, the
//! hash at rest, the `FileStore` file, the export, the access token and
//! the serde forms of public types are things hosts persist or send to
//! other services. What an earlier build wrote must read the same, and a
//! format this build does not know must be refused as such, never misread.

use keyward::StoreError;
use keyward::store::{FileStore, ImportMode};

/// An export of another format version is refused as one, its version
/// named, whatever else its first line holds: a later version may add
/// header fields, or settings of a shape this one cannot read, and the
/// host must learn that the export is newer than this build, not that a
/// field is unknown. Nothing is imported.
#[test]
fn an_export_of_another_version_is_refused_naming_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("keys.kw")).unwrap();
    for (header, version) in [
        (r#"{"keyward_export":2,"settings":null}"#, 2),
        (r#"{"keyward_export":2}"#, 2),
        (
            r#"{"keyward_export":2,"settings":null,"signed_by":"ops"}"#,
            2,
        ),
        (
            r#"{"settings":{"default_expiry":"P30D","rules":[]},"keyward_export":3}"#,
            3,
        ),
        (r#"{"keyward_export":0,"settings":null}"#, 0),
    ] {
        let input = format!("{header}\n");
        for mode in [ImportMode::Merge, ImportMode::Replace] {
            match store.import(input.as_bytes(), mode) {
                Err(e @ StoreError::InvalidImport { .. }) => assert_eq!(
                    e.to_string(),
                    format!("invalid import at line 1: unknown export version {version}"),
                    "{header}"
                ),
                other => panic!("{header}: {other:?}"),
            }
        }
    }
    assert!(store.is_empty());
}
