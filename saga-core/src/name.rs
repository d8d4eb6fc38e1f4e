//! [`Name`]: a saga's or a step's name, as definitions hold it and
//! reports carry it.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// A saga's or a step's name: text fixed at compile time (a string
/// literal, [`Task::NAME`](crate::Task::NAME)) held as it is, or text made
/// at run time held in an `Arc<str>`.
///
/// Every report carries its saga's and its steps' names. Copying a
/// `&'static str` into a report writes nothing that another thread reads,
/// where cloning an `Arc<str>` writes its count, on memory that every
/// thread running the same definition shares: a definition shared by two
/// threads would then scale less than one per thread (docs/PERFORMANCE.md).
/// So names given as literals stay literals; only names made at run time
/// (a `String`) pay for a shared count.
///
/// A `Name` reads as a `&str` (it derefs to one) and compares, orders and
/// hashes as its text, whichever way it is held.
///
/// ```
/// use saga_core::Name;
///
/// let literal = Name::from("reserve");
/// let made = Name::from(format!("reserve{}", ""));
/// assert_eq!(literal, made);
/// assert_eq!(literal, "reserve");
/// assert!(literal.starts_with("res"));
/// ```
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// A name fixed at compile time: no allocation, no shared count.
    pub const fn from_static(name: &'static str) -> Self {
        Name(Repr::Static(name))
    }

    /// The name as text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(name) => name,
            Repr::Shared(name) => name,
        }
    }
}

impl Deref for Name {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Name {
    fn from(name: &'static str) -> Self {
        Name::from_static(name)
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Name(Repr::Shared(name.into()))
    }
}

impl From<&String> for Name {
    fn from(name: &String) -> Self {
        Name(Repr::Shared(name.as_str().into()))
    }
}

impl From<Box<str>> for Name {
    fn from(name: Box<str>) -> Self {
        Name(Repr::Shared(name.into()))
    }
}

impl From<Arc<str>> for Name {
    fn from(name: Arc<str>) -> Self {
        Name(Repr::Shared(name))
    }
}

impl From<Cow<'static, str>> for Name {
    fn from(name: Cow<'static, str>) -> Self {
        match name {
            Cow::Borrowed(name) => Name::from_static(name),
            Cow::Owned(name) => Name::from(name),
        }
    }
}

impl From<Name> for Arc<str> {
    fn from(name: Name) -> Self {
        match name.0 {
            Repr::Static(name) => Arc::from(name),
            Repr::Shared(name) => name,
        }
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.as_str().to_owned()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Arc<str>> for Name {
    fn eq(&self, other: &Arc<str>) -> bool {
        self.as_str() == &**other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// As its text: `"reserve"`.
impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Serialized as its text.
impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Name::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash(name: &Name) -> u64 {
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn literal_and_made_names_compare_order_and_hash_as_their_text() {
        let literal = Name::from("charge");
        let made = Name::from(String::from("charge"));
        assert!(matches!(literal.0, Repr::Static(_)));
        assert!(matches!(made.0, Repr::Shared(_)));
        assert_eq!(literal, made);
        assert_eq!(hash(&literal), hash(&made));
        assert_eq!(literal.cmp(&made), Ordering::Equal);
        let (a, b) = (Name::from("a"), Name::from(String::from("b")));
        assert_eq!(a.cmp(&b), Ordering::Less);
        assert_eq!(b.cmp(&a), Ordering::Greater);
        assert_eq!(literal, "charge");
        assert_eq!("charge", made);
        assert_ne!(literal, "refund");
        assert_eq!(format!("{literal} {made:?}"), "charge \"charge\"");
        assert_eq!(&*Arc::<str>::from(made.clone()), "charge");
    }

    #[test]
    fn names_serialize_as_their_text() {
        let json = serde_json::to_string(&Name::from("ship")).unwrap();
        assert_eq!(json, "\"ship\"");
        let back: Name = serde_json::from_str(&json).unwrap();
        assert_eq!(back, "ship");
    }
}
