//! The [`Method`] trait: one typed declaration per protocol method.
//!
//! A declaration names the method, the scope it needs, whether it changes state, and the
//! types of its params and result. The gateway routes with it (`Router::on::<M>`: scope
//! checks, idempotency and `features.methods` all come from the declaration), and the client
//! calls with it (`Client::request::<M>`), so the two sides cannot disagree on a shape.
//! The declarations themselves live in [`crate::methods`], one file per family.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::scope::Scope;

/// One protocol method.
pub trait Method {
    /// The wire name, e.g. `tasks.list`.
    const NAME: &'static str;
    /// The scope a caller must hold. Protocol methods take it from the published schema's
    /// `methods` map; `molt.*` methods are molt's own.
    const SCOPE: Scope;
    /// Whether the call changes state. Such a call is refused while the gateway stops, and
    /// an `idempotencyKey` in its params replays the first result for a day.
    const MUTATES: bool;
    /// Whether the router replays the first result for a repeated `idempotencyKey`. Methods
    /// that start runs dedupe by run id themselves (`dedupes`), because a repeat must report
    /// the run's current state, not its first answer.
    const REPLAYS: bool;
    /// What the client sends. Absent params deserialize from `{}`.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// What the gateway answers.
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

/// What the router and the conformance tests need to know of a method, without its types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    pub name: &'static str,
    pub scope: Scope,
    pub mutates: bool,
    pub replays: bool,
}

impl MethodInfo {
    pub const fn of<M: Method>() -> Self {
        Self {
            name: M::NAME,
            scope: M::SCOPE,
            mutates: M::MUTATES,
            replays: M::REPLAYS,
        }
    }
}

/// Declares a family of methods: `Name = "wire.name", Scope, reads|mutates|dedupes, Params =>
/// Result;`. `dedupes` is a state-changing method that handles repeated idempotency keys itself.
/// Each becomes an uninhabited type implementing [`Method`], and the family gets a
/// `DECLARED` list of them, in order.
#[macro_export]
macro_rules! declare_methods {
    ($( $(#[$doc:meta])* $name:ident = $wire:literal, $scope:ident, $effect:ident,
        $params:ty => $result:ty; )+) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $name {}
            impl $crate::method::Method for $name {
                const NAME: &'static str = $wire;
                const SCOPE: $crate::scope::Scope = $crate::scope::Scope::$scope;
                const MUTATES: bool = $crate::declare_methods!(@effect $effect);
                const REPLAYS: bool = $crate::declare_methods!(@replay $effect);
                type Params = $params;
                type Result = $result;
            }
        )+
        /// This family's methods, in declaration order.
        pub const DECLARED: &[$crate::method::MethodInfo] =
            &[$($crate::method::MethodInfo::of::<$name>()),+];
    };
    (@effect reads) => { false };
    (@effect mutates) => { true };
    (@effect dedupes) => { true };
    (@replay reads) => { false };
    (@replay mutates) => { true };
    (@replay dedupes) => { false };
}

/// Params of a method that takes none and ignores whatever it is sent, as the schema allows
/// for `health` and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyParams {}

/// Params of a method that takes none and refuses unknown fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}
