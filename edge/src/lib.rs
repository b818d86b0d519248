//! The edge: a caching proxy that serves readers near them and applies the invalidations the origin
//! pushes. The crate is still empty; the workspace keeps its place.
