"""French number formats where Django's differ from French typography: the thousands are
set apart by a narrow no-break space (1 500, 48,9 Mio), as the Imprimerie nationale's rules
and CLDR have it; Django's other French formats apply."""

THOUSAND_SEPARATOR = "\u202f"
