//! What an `IPAddressPool`'s `spec.addresses` entries mean: CIDRs and inclusive ranges, parsed,
//! counted and compared. (Being moved here from `ferrolb-allocator`.)
