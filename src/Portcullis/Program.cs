using Portcullis.Cli;

// One executable, like `vault`: `portcullis serve` runs the server, every other command is the CLI.
return await CliApp.RunAsync(args);
