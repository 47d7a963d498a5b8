//! The vocabularies of the protocol as enums. Job states follow Slurm's
//! names where one fits. Each has `as_str` (its wire and database text)
//! and `FromStr`.

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident, $what:literal, { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The text on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        // The schema is the wire's closed set of strings (a derived one
        // would spell the Rust variant names).
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($s),+]))
                    .description(Some(concat!("A ", $what, ": one of these strings, exactly.")))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(format!(
                        concat!($what, " must be one of {} (found {:?})"),
                        [$($s),+].join(", "),
                        s
                    )),
                }
            }
        }

        #[cfg(feature = "rusqlite")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(
                    rusqlite::types::ValueRef::Text(self.as_str().as_bytes()),
                ))
            }
        }

        #[cfg(feature = "sqlx")]
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<$name, sqlx::error::BoxDynError> {
                let s = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(s.parse::<$name>()?)
            }
        }
    };
}

vocabulary!(
    /// A job's state.
    JobState, "state", {
        /// Queued: waiting for quota or resources (again, after a retry or
        /// a preemption).
        Pending = "PENDING",
        /// An attempt holds resources: its tasks are assigned or running.
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
        Preempted = "PREEMPTED",
    }
);

impl JobState {
    /// Whether the job is over for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

vocabulary!(
    /// One task of one attempt.
    TaskState, "task state", {
        /// Placed; the agent has not confirmed it runs yet.
        Assigned = "ASSIGNED",
        Running = "RUNNING",
        /// The agent was told to stop it and has not confirmed yet; its
        /// devices stay busy until it does.
        Killing = "KILLING",
        Killed = "KILLED",
        /// Ended by itself, with an exit code or a signal.
        Exited = "EXITED",
        /// Its node went silent, or its agent stopped reporting it.
        Lost = "LOST",
    }
);

vocabulary!(
    /// A node's state.
    NodeState, "node state", {
        /// Takes new work.
        Ready = "ready",
        /// Runs what it has, takes no new work (set by the admin).
        Draining = "draining",
        /// Its agent missed its lease; it returns when the agent reports.
        Down = "down",
    }
);

vocabulary!(
    /// What a job paid for: guaranteed quota, on-demand, or spot (cheap,
    /// preempted by the other two).
    Class, "class", {
        Guaranteed = "guaranteed",
        OnDemand = "on-demand",
        Spot = "spot",
    }
);

vocabulary!(
    /// Entries of a job's event history.
    EventKind, "event kind", {
        Submitted = "SUBMITTED",
        Started = "STARTED",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
        Preempted = "PREEMPTED",
        /// An attempt failed or was lost and the job is queued again.
        Retrying = "RETRYING",
    }
);

vocabulary!(
    /// What a token may do.
    TokenScope, "scope", {
        Admin = "admin",
        Tenant = "tenant",
        Agent = "agent",
        /// A model router outside the server (`suanli gateway`): the
        /// router API (`/v1/routers/...`) and nothing else.
        Router = "router",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_text_and_json() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(*s));
            let j = serde_json::to_string(s).unwrap();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<JobState>(&j).unwrap(), *s);
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(*s));
        }
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>(), Ok(*s));
        }
        for s in Class::ALL {
            assert_eq!(s.as_str().parse::<Class>(), Ok(*s));
        }
        assert_eq!(Class::OnDemand.as_str(), "on-demand");
    }

    #[test]
    fn unknown_text_names_the_choices() {
        let e = "DONE".parse::<JobState>().unwrap_err();
        assert!(e.contains("PENDING, RUNNING"), "{e}");
        assert!(e.contains("\"DONE\""), "{e}");
        assert!("vip"
            .parse::<Class>()
            .unwrap_err()
            .starts_with("class must be"));
    }
}
