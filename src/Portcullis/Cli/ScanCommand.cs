using System.CommandLine;
using System.Text.RegularExpressions;
using Portcullis.Security;
using static Portcullis.Cli.CommandSupport;

namespace Portcullis.Cli;

/// <summary><c>scan</c>: find leaked tokens in files, and revoke them (docs/cli.md).</summary>
internal static partial class ScanCommand
{
    public static IEnumerable<Command> All()
    {
        yield return Scan();
    }

    [GeneratedRegex(@"\b(pc[psc])_[0-9A-Za-z]{36}\b")]
    private static partial Regex TokenPattern();

    private static Command Scan()
    {
        var paths = new Argument<string[]>("PATH") { Description = "Files or directories to search.", Arity = ArgumentArity.OneOrMore };
        var revoke = new Option<bool>("--revoke") { Description = "Revoke every token found, through /auth/revoke of the current server." };
        var command = new Command("scan", "Find Portcullis tokens in files (pattern and checksum, so look-alikes are not reported). Exit 1 when any is found.\n\nExamples:\n  portcullis scan .\n  portcullis scan leaked.log --revoke") { paths, revoke };
        command.SetAction(Run(async (parse, target, cancellationToken) =>
        {
            var format = new TokenFormat("pc");
            var found = new List<(string File, int Line, string Token)>();
            foreach (var path in parse.GetValue(paths)!)
            {
                IEnumerable<string> files = Directory.Exists(path)
                    ? Directory.EnumerateFiles(path, "*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint })
                        .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}.git{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
                    : File.Exists(path) ? [path] : throw new CliException($"{path}: no such file or directory.", 2);
                foreach (var file in files)
                {
                    var number = 0;
                    foreach (var line in File.ReadLines(file))
                    {
                        number++;
                        foreach (Match m in TokenPattern().Matches(line))
                        {
                            if (format.TryRead(m.Value, out _))
                                found.Add((file, number, m.Value));
                        }
                    }
                }
            }
            var revoked = 0;
            if (parse.GetValue(revoke) && found.Count > 0)
            {
                var (url, _, _) = target.Resolve(needToken: false);
                var client = target.Client(url, null);
                foreach (var token in found.Select(f => f.Token).Distinct())
                {
                    await client.RevokeAsync(token, reason: "leaked", cancellationToken);
                    revoked++;
                }
            }
            Print(parse, new { found = found.Select(f => new { file = f.File, line = f.Line, hint = format.Hint(f.Token) }), revoked }, () =>
            {
                foreach (var (file, line, token) in found)
                    Console.WriteLine($"{file}:{line}: {format.Hint(token)}");
                Console.Error.WriteLine(found.Count == 0 ? "No Portcullis tokens found." :
                    $"{found.Count} Portcullis token{(found.Count == 1 ? "" : "s")} found{(revoked > 0 ? $"; {revoked} revoked" : ". Revoke them with --revoke, or in the web UI")}.");
            });
            if (found.Count > 0)
                throw new FoundTokens();
        }));
        return command;
    }

    /// <summary>Exit 1 without an error message: finding tokens is the answer, not a failure to run.</summary>
    private sealed class FoundTokens() : CliException("", 1);
}
