from .render import main

raise SystemExit(main())
