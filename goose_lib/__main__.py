from goose_lib.cli import main

raise SystemExit(main())
