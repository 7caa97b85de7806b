using System.Net;
using System.Text.Json;
using Portcullis.Tests.Infrastructure;

namespace Portcullis.Tests;

/// <summary>
/// <c>portcullis login</c> with a web browser (docs/cli.md): the CLI as a process, under a pseudo-terminal for the menu,
/// a spinner and Ctrl-C, and piped for scripts; the approval made by a person at /device over HTTP.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class CliDeviceLoginTests(DeviceLoginServer server) : IClassFixture<DeviceLoginServer>, IDisposable
{
    private readonly string _config = Directory.CreateTempSubdirectory("portcullis-cli-").FullName;

    public void Dispose() => Directory.Delete(_config, recursive: true);

    private string Url => server.BaseAddress.ToString().TrimEnd('/');

    private const string CodeLine = @"Open (\S+)/device and enter ([A-Z]{4}-[A-Z]{4})";

    private JsonElement StoredContext() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(_config, "credentials.json"))).RootElement.GetProperty("contexts")[0];

    /// <summary>A person logged in at the server approves (or denies) the code the CLI printed.</summary>
    private async Task DecideAsync(string username, string password, string userCode, string action = "approve")
    {
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var (page, html) = await DeviceLogin.OpenAsync(person, userCode);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("portcullis login on " + Environment.MachineName, html);
        Assert.Contains("portcullis-cli/", html);
        // The page's own choices, as a person who just clicks Approve leaves them: a name after this machine, 30 days, api and services.
        var name = System.Text.RegularExpressions.Regex.Match(html, "id=\"name\" name=\"name\"[^>]* value=\"([^\"]*)\"").Groups[1].Value;
        Assert.StartsWith("cli on " + Environment.MachineName, name);
        var decided = await DeviceLogin.DecideAsync(person, html, userCode, action,
            ("name", name), ("expiration", "30"), ("api", "on"), ("services", "on"), ("service_choice", "all"));
        Assert.Equal(HttpStatusCode.OK, decided.StatusCode);
    }

    [Fact]
    public async Task WebLoginPrintsTheAddressAndCodeWaitsAndStoresTheApprovedTokenWithoutPrintingIt()
    {
        var (username, password, _) = await server.CreateUserAsync();
        await using var cli = CliProcess.Start(_config, ["login", "--host", Url, "--web", "--no-browser"], terminal: false);
        var code = await cli.WaitForAsync(CodeLine);
        Assert.Equal(Url, code.Groups[1].Value);
        await cli.WaitForAsync("Waiting for the approval in the browser");
        Assert.DoesNotContain("browser has been opened", cli.Output);
        await DecideAsync(username, password, code.Groups[2].Value);

        var (exit, output) = await cli.ExitAsync();
        Assert.True(exit == 0, output);
        Assert.Contains($"Logged in to {Url} as {username}", output);
        var stored = StoredContext();
        var token = stored.GetProperty("api_token").GetString()!;
        PortcullisServer.Secrets.Add(token);
        Assert.StartsWith("pcp_", token);
        Assert.Equal(username, stored.GetProperty("username").GetString());
        Assert.DoesNotContain(token, output);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_config, "credentials.json")));

        // `context current --json` shows it like any other credential, and it is the API token named after this machine.
        await using var current = CliProcess.Start(_config, ["context", "current", "--json"], terminal: false);
        var (_, json) = await current.ExitAsync();
        Assert.Equal(token, JsonDocument.Parse(json).RootElement.GetProperty("api_token").GetString());
        using var asToken = server.Client(token);
        var me = await (await asToken.GetAsync("/api/v1/me")).JsonAsync();
        Assert.Equal("api_token", me.GetProperty("auth").GetProperty("kind").GetString());
        var tokens = await (await asToken.GetAsync("/api/v1/tokens")).JsonAsync();
        Assert.Contains(tokens.EnumerateArray(), t => t.GetProperty("name").GetString()!.StartsWith("cli on " + Environment.MachineName, StringComparison.Ordinal));
    }

    [Fact]
    public async Task PrintTokenShowsTheCredentialAndADenialStoresNothing()
    {
        var (username, password, _) = await server.CreateUserAsync();
        await using (var cli = CliProcess.Start(_config, ["login", "--host", Url, "--web", "--no-browser"], terminal: false))
        {
            var code = await cli.WaitForAsync(CodeLine);
            await DecideAsync(username, password, code.Groups[2].Value, "deny");
            var (exit, output) = await cli.ExitAsync();
            Assert.Equal(1, exit);
            Assert.Contains("The login was denied in the browser. Nothing was stored.", output);
            Assert.False(File.Exists(Path.Combine(_config, "credentials.json")));
        }

        await using (var cli = CliProcess.Start(_config, ["login", "--host", Url, "--web", "--no-browser", "--print-token"], terminal: false))
        {
            var code = await cli.WaitForAsync(CodeLine);
            await DecideAsync(username, password, code.Groups[2].Value);
            var (exit, output) = await cli.ExitAsync();
            Assert.True(exit == 0, output);
            var token = StoredContext().GetProperty("api_token").GetString()!;
            PortcullisServer.Secrets.Add(token);
            Assert.Contains($"Logged in to {Url} as {username}\n{token}\n", output);
        }
    }

    [Fact]
    public async Task OnATerminalTheMenuAsksHowAndTheFirstChoiceOpensTheBrowser()
    {
        var (username, password, _) = await server.CreateUserAsync();
        // A stand-in browser that notes the address it was asked to open.
        var opened = Path.Combine(_config, "opened.txt");
        var fakeBrowser = Path.Combine(_config, "browser.sh");
        await File.WriteAllTextAsync(fakeBrowser, $"#!/bin/sh\necho \"$1\" > '{opened}'\n");
        File.SetUnixFileMode(fakeBrowser, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        await using var cli = CliProcess.Start(_config, ["login", "--host", Url], terminal: true, new() { ["BROWSER"] = fakeBrowser });
        await cli.WaitForAsync("How would you like to authenticate\\?");
        await cli.WaitForAsync("Paste an existing API token");
        await cli.WaitForAsync("Username and password");
        await cli.TypeAsync(CliProcess.Enter);
        var code = await cli.WaitForAsync(CodeLine);
        await cli.WaitForAsync("Your browser has been opened");
        Assert.Equal($"{Url}/device?user_code={code.Groups[2].Value}", (await File.ReadAllTextAsync(opened)).Trim());
        await DecideAsync(username, password, code.Groups[2].Value);
        var (exit, output) = await cli.ExitAsync();
        Assert.True(exit == 0, output);
        Assert.Contains($"Logged in to {Url} as {username}", output);
    }

    [Fact]
    public async Task ArrowKeysChooseUsernameAndPasswordWhichArePromptedWithThePasswordHidden()
    {
        var (username, password, _) = await server.CreateUserAsync();
        await using var cli = CliProcess.Start(_config, ["login", "--host", Url], terminal: true);
        await cli.WaitForAsync("Username and password");
        await cli.TypeAsync(CliProcess.Down + CliProcess.Down + CliProcess.Enter);
        await cli.WaitForAsync("Username:");
        await cli.TypeAsync(username + "\r");
        await cli.WaitForAsync("Password:");
        await cli.TypeAsync(password + "\r");
        var (exit, output) = await cli.ExitAsync();
        Assert.True(exit == 0, output);
        Assert.Contains("How would you like to authenticate? Username and password", output);
        Assert.Contains($"Logged in to {Url} as {username}", output);
        Assert.DoesNotContain(password, output);
        Assert.StartsWith("eyJ", StoredContext().GetProperty("api_token").GetString());
    }

    [Fact]
    public async Task CtrlCWhileWaitingStopsCleanlyAndStoresNothing()
    {
        await using var cli = CliProcess.Start(_config, ["login", "--host", Url, "--web", "--no-browser"], terminal: true);
        await cli.WaitForAsync(CodeLine);
        await cli.WaitForAsync("Waiting for the approval");
        // A person reads the line before pressing Ctrl-C; on a loaded machine the spinner may still be starting.
        await Task.Delay(1000);
        await cli.TypeAsync(CliProcess.CtrlC);
        var (exit, output) = await cli.ExitAsync();
        Assert.Equal(130, exit);
        Assert.Contains("Stopped before the login was approved. Nothing was stored", output);
        Assert.DoesNotContain("Exception", output);
        Assert.False(File.Exists(Path.Combine(_config, "credentials.json")));
    }

    [Fact]
    public async Task ATokenApprovedWithoutApiAccessIsRevokedAndNothingIsStored()
    {
        var (username, password, _) = await server.CreateUserAsync();
        await using var cli = CliProcess.Start(_config, ["login", "--host", Url, "--web", "--no-browser"], terminal: false);
        var code = (await cli.WaitForAsync(CodeLine)).Groups[2].Value;
        using var person = await DeviceLogin.PersonAsync(server, username, password);
        var (_, html) = await DeviceLogin.OpenAsync(person, code);
        var decided = await DeviceLogin.DecideAsync(person, html, code, "approve", ("name", "services only"), ("expiration", "7"), ("services", "on"), ("service_choice", "all"));
        Assert.Equal(HttpStatusCode.OK, decided.StatusCode);
        var (exit, output) = await cli.ExitAsync();
        Assert.Equal(1, exit);
        Assert.Contains("has no Developer Operations Access", output);
        Assert.False(File.Exists(Path.Combine(_config, "credentials.json")));
        using var admin = server.Client(await server.AdminTokenAsync());
        var tokens = await (await admin.GetAsync("/api/v1/tokens?owner=" + username)).JsonAsync();
        Assert.Equal("revoked", tokens.EnumerateArray().Single(t => t.GetProperty("name").GetString() == "services only").GetProperty("status").GetString());
    }

    [Fact]
    public async Task WithoutATerminalThereIsNoMenuButAMessageSayingWhichOptionToPass()
    {
        await using var cli = CliProcess.Start(_config, ["login", "--host", Url], terminal: false);
        var (exit, output) = await cli.ExitAsync();
        Assert.Equal(2, exit);
        Assert.Contains("--web", output);
        Assert.Contains("--api-token-stdin", output);
        Assert.DoesNotContain("How would you like", output);

        await using var both = CliProcess.Start(_config, ["login", "--host", Url, "--web", "--password-stdin"], terminal: false);
        var (bothExit, bothOutput) = await both.ExitAsync();
        Assert.Equal(2, bothExit);
        Assert.Contains("Choose one way to log in", bothOutput);
    }
}

/// <summary>A device login nobody approves in time: the CLI says what happened and what to do.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class CliDeviceCodeExpiryTests(ShortDeviceCodeServer server) : IClassFixture<ShortDeviceCodeServer>, IDisposable
{
    private readonly string _config = Directory.CreateTempSubdirectory("portcullis-cli-").FullName;

    public void Dispose() => Directory.Delete(_config, recursive: true);

    [Fact]
    public async Task AnExpiredCodeEndsTheLoginSayingToStartAgain()
    {
        await using var cli = CliProcess.Start(_config, ["login", "--host", server.BaseAddress.ToString().TrimEnd('/'), "--web", "--no-browser"], terminal: false);
        var (exit, output) = await cli.ExitAsync();
        Assert.Equal(1, exit);
        Assert.Matches("The code [A-Z]{4}-[A-Z]{4} expired before it was approved. Run `portcullis login --web` again", output);
        Assert.False(File.Exists(Path.Combine(_config, "credentials.json")));
    }
}
