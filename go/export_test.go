package dialpool

// DialsNetpolled is how many dials so far waited for their handshake in
// Go's netpoller.
func DialsNetpolled() int64 { return dialsNetpolled.Load() }
