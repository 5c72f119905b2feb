//! Closed sets of named values (statuses, channels, kinds...): a Rust enum in the domain,
//! stored and filtered by name, with one wire mapping each in the gateway. Declared with
//! [`named_enum!`](crate::named_enum), which also gives the list of names a field table's
//! [`Kind::Enum`](crate::resource::Kind::Enum) needs, so the names are written once.

/// Declares an enum whose values are stored, filtered and serialised by name; the first
/// variant is the default. Unknown names fail to deserialise (a stored value this version
/// does not know is an error, never silently another value).
///
/// ```
/// crm_core::named_enum! {
///     /// How urgent a case is.
///     pub enum Priority { Normal = "NORMAL", High = "HIGH", Urgent = "URGENT" }
/// }
/// assert_eq!(Priority::default(), Priority::Normal);
/// assert_eq!(Priority::NAMES, &["NORMAL", "HIGH", "URGENT"]);
/// assert_eq!(Priority::parse("HIGH"), Some(Priority::High));
/// assert_eq!(Priority::Urgent.as_str(), "URGENT");
/// assert!(serde_json::from_str::<Priority>("\"LOW\"").is_err());
/// ```
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(#[$first_meta:meta])*
            $first:ident = $first_text:literal
            $(, $(#[$variant_meta:meta])* $variant:ident = $text:literal)* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis enum $name {
            $(#[$first_meta])*
            #[default]
            $first,
            $($(#[$variant_meta])* $variant,)*
        }

        impl $name {
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$first_text $(, $text)*];

            /// The stored name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    Self::$first => $first_text,
                    $(Self::$variant => $text,)*
                }
            }

            /// The value of a name, if it is one.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $first_text => Some(Self::$first),
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as $crate::__serde::Deserialize>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    <D::Error as $crate::__serde::de::Error>::custom(::std::format!(
                        "{:?} is not one of {}",
                        s,
                        Self::NAMES.join(", ")
                    ))
                })
            }
        }
    };
}
