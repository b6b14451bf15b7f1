// Package phone normalizes phone numbers to the form chatd uses everywhere:
// E.164 digits without the leading '+', for example "15551234567".
//
// Accounts, verification codes, business certificates and contact lookups
// are all keyed by this form, so every number that enters the system goes
// through [Normalize] (or [Join]) first.
package phone
