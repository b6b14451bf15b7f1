package server

// SetAfterQueueRead makes every session's writer call f(phone) right after it has read its account's
// delivery queue (Pending), before it looks at what was handed over meanwhile. Tests use it to commit
// items inside that window. The returned function removes it.
func SetAfterQueueRead(f func(phone string)) (restore func()) {
	afterQueueRead.Store(&f)
	return func() { afterQueueRead.Store(nil) }
}
