package mmsplayer

// TakePort and PutPort expose the allocator to the external tests.
func TakePort(p *Ports, bind func(uint16) error) (uint16, error) { return p.take(bind) }

func PutPort(p *Ports, port uint16) { p.put(port) }
