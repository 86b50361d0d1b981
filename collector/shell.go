package collector

import "context"

func (d *driver) shell(ctx context.Context, p *probeInfo) error {
	d.res.Mode = "shell"
	return nil
}
