//! Who is alive: the pure judgement of one member (`state`), the members of
//! one monitor and what a beat means for them (`table`), each member's
//! availability over a rolling window (`availability`), and when alarms are
//! silenced (`silence`). No I/O: time is always passed in.

pub mod availability;
pub mod silence;
pub mod state;
pub mod table;

pub use heartbeat_crds::monitor::MemberState;
pub use state::{Blind, Timing, View};
pub use table::{MemberKey, Table};
