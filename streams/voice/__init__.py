"""Citizens' voice: appeals from every channel and the emotion in them."""
