"""Citizens' voice: appeals from every channel, their categories and emotion."""
