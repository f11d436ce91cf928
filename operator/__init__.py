"""Control plane: the Kopf operator. May import hookline.sender; never the reverse."""
