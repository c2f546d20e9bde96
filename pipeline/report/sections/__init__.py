"""Report sections: each module's render(ctx) returns a list of blocks, or [] if its stage has not run."""
