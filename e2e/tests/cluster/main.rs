//! The cluster tier of the test bed itself: the stack, the process node and
//! its pod network, the installed tools. One binary, a module per concern.

mod pod_network;
mod process_node;
mod smoke;
mod stack_lifecycle;
