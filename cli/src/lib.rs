//! `kubectl ferrolb`: trace, status, doctor and migrate. (Under construction.)
