from vrscale.cli import main

raise SystemExit(main())
