//! Counters declared once.
//!
//! [`counters!`](crate::counters!) declares a set of counters, each with its doc comment and
//! kind, and makes of that one declaration the shared (atomic) struct the owning worker
//! publishes to, a plain copy where one is wanted, and [`Info`] for each counter: the name that
//! is its `/stats` key and the last part of its Prometheus name, the help (the doc comment) and
//! whether it is a running total or a level. Reports and exposition walk [`Info`] and
//! `values()`, so a counter cannot be published but missing from them, or named twice.

/// Whether a counter only goes up or is a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A running total (Prometheus `counter`).
    Counter,
    /// A level that goes up and down (Prometheus `gauge`).
    Gauge,
}

/// What a declared counter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// Its field name: the `/stats` key and the last part of its Prometheus name.
    pub name: &'static str,
    /// Its help: the doc comment of its declaration.
    pub help: &'static str,
    /// Running total or level.
    pub kind: Kind,
}

/// Declares a set of counters: `Counter name` or `Gauge name`, each after its doc comment.
///
/// `struct Shared => Plain { … }` makes both the atomic `Shared` (with `snapshot()` and
/// `publish(&Plain)`) and the plain `Plain`; `struct Shared { … }` only the atomic one. Both
/// get `INFO` and `values()`.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $shared:ident => $plain:ident {
            $( $(#[doc = $doc:literal])+ $kind:ident $field:ident, )*
        }
    ) => {
        $crate::counters!(
            $(#[$meta])*
            $vis struct $shared { $( $(#[doc = $doc])+ $kind $field, )* }
        );

        #[doc = concat!("A plain copy of [`", stringify!($shared), "`].")]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $plain {
            $( $(#[doc = $doc])+ pub $field: u64, )*
        }

        impl $plain {
            /// Each counter with its value, in declaration order.
            pub fn values(&self) -> impl Iterator<Item = (&'static $crate::counters::Info, u64)> {
                $shared::INFO.iter().zip([$( self.$field ),*])
            }

            /// Adds `other`'s counters to these.
            pub fn add(&mut self, other: &$plain) {
                $( self.$field += other.$field; )*
            }

            /// Sets the counter named `name`; false if the set has none of that name.
            pub fn set(&mut self, name: &str, v: u64) -> bool {
                match name {
                    $( stringify!($field) => { self.$field = v; true } )*
                    _ => false,
                }
            }
        }

        impl $shared {
            /// A plain copy.
            pub fn snapshot(&self) -> $plain {
                $plain { $( $field: self.$field.load(::std::sync::atomic::Ordering::Relaxed), )* }
            }

            /// Stores `v`. Single writer (the owning worker): plain stores, no read-modify-write.
            pub fn publish(&self, v: &$plain) {
                $( self.$field.store(v.$field, ::std::sync::atomic::Ordering::Relaxed); )*
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $shared:ident {
            $( $(#[doc = $doc:literal])+ $kind:ident $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        $vis struct $shared {
            $( $(#[doc = $doc])+ pub $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $shared {
            /// Every counter of the set, in declaration order.
            pub const INFO: &'static [$crate::counters::Info] = &[$(
                $crate::counters::Info {
                    name: stringify!($field),
                    help: concat!($($doc),+),
                    kind: $crate::counters::Kind::$kind,
                }
            ),*];

            /// Each counter with its value now, in declaration order.
            pub fn values(&self) -> impl Iterator<Item = (&'static $crate::counters::Info, u64)> + '_ {
                Self::INFO
                    .iter()
                    .zip([$( self.$field.load(::std::sync::atomic::Ordering::Relaxed) ),*])
            }
        }
    };
}

/// A counter's help as one trimmed line (doc comments come with a leading space per line).
pub fn help_line(info: &Info) -> String {
    one_line(info.help)
}

/// A doc comment's text as one line: its words joined by single spaces.
pub fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    crate::counters! {
        /// Test counters.
        struct Shared => Plain {
            /// Things seen.
            Counter seen,
            /// Things held
            /// now.
            Gauge held,
        }
    }

    #[test]
    fn one_declaration_gives_names_help_kinds_and_values() {
        let s = Shared::default();
        s.publish(&Plain { seen: 3, held: 2 });
        let v: Vec<_> = s.values().map(|(i, v)| (i.name, super::help_line(i), i.kind, v)).collect();
        assert_eq!(
            v,
            [
                ("seen", "Things seen.".to_owned(), super::Kind::Counter, 3),
                ("held", "Things held now.".to_owned(), super::Kind::Gauge, 2)
            ]
        );
        let mut p = s.snapshot();
        p.add(&Plain { seen: 1, held: 1 });
        assert_eq!(p.values().map(|(_, v)| v).collect::<Vec<_>>(), [4, 3]);
        // Set by name, as another process's counters arrive (a hot restart).
        assert!(p.set("held", 9));
        assert!(!p.set("nothing", 1));
        assert_eq!(p, Plain { seen: 4, held: 9 });
    }
}
