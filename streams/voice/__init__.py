"""Citizens' voice: appeals from every channel, their categories and the emotion in them."""
