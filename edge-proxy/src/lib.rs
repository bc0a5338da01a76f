//! edge-proxy: a Pingora edge that answers unchanged polls from memory and
//! forwards everything else to healthy API nodes.

pub mod versions;
