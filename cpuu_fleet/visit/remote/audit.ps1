# cpuu-fleet: audit
<#
.SYNOPSIS
    Read-only: where every user's Outlook profiles point on this workstation.
.DESCRIPTION
    For every user with a profile folder here (Win32_UserProfile, special accounts left out), reads
    their registry hive: a logged-on user's is loaded under HKEY_USERS already; for a user who is
    not logged on, a COPY of their NTUSER.DAT is loaded with reg.exe under a private name and
    unloaded after (the user's own file is only ever opened for reading; a file another process
    holds gives HiveState Locked, never a failed step). Per Outlook profile (Office 16.0 and 15.0,
    and the Windows Messaging Subsystem of older versions) it reports the name, whether it is the
    default, each Exchange account's server and mailbox, cached mode, the OST path and size, and
    per user whether New Outlook is in use. One hashtable per row (host, user, profile, account),
    at most -MaxRows rows. Changes nothing the user or CPUU owns.

    Assumptions where Microsoft is silent (docs/remote-scripts.md, "audit"):
    - An Exchange account is a profile section (a direct subkey of the profile) holding
      PR_PROFILE_HOME_SERVER (001e6602 ANSI or 001f6602 Unicode); its mailbox is
      PR_PROFILE_USER_SMTP_EMAIL_ADDRESS (001f6641), else PR_PROFILE_USER (001e6603).
    - Cached Exchange Mode is bit 0x80 of PR_PROFILE_CONFIG_FLAGS (00036601), and a cached
      profile is what CPUU calls an "offline" profile (code 6 without -ProcessOfflineProfiles On).
    - The OST path is PR_PROFILE_OFFLINE_STORE_PATH (001f6610) in any section of the profile.
    - New Outlook is in use when HKCU\Software\Microsoft\Office\16.0\Outlook\Preferences has
      UseNewOutlook = 1 (the "New Outlook" toggle).
    - A hive loaded from a copy of NTUSER.DAT (without its .LOG1/.LOG2) reads as the user left it
      at their last logoff.
#>
[CmdletBinding()]
param(
    [ValidateRange(1, 100000)]
    [int]$MaxRows = 2000
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

# Language mode first, as preflight does (see there): every .NET call below would fail otherwise.
$languageMode = [string]$ExecutionContext.SessionState.LanguageMode
if ($languageMode -ne 'FullLanguage') {
    Write-Error -Message ("PowerShell on {0} runs in {1} mode (AppLocker/WDAC script enforcement): the cpuu-fleet scripts need FullLanguage." -f $env:COMPUTERNAME, $languageMode) `
        -ErrorId 'ConstrainedLanguage' -Category PermissionDenied -TargetObject $languageMode -ErrorAction Stop
}

$maxText = 256
$maxUsers = 64
$maxProfiles = 32
$maxAccounts = 8
$officeVersions = @('16.0', '15.0')
$mapiSubsystem = 'Software\Microsoft\Windows NT\CurrentVersion\Windows Messaging Subsystem'

function Test-Locked {
    # ERROR_SHARING_VIOLATION (32) and ERROR_LOCK_VIOLATION (33): another process holds the file.
    param([System.Exception]$Exception)
    while ($null -ne $Exception) {
        if ($Exception -is [System.IO.IOException]) {
            $code = $Exception.HResult -band 0xFFFF
            if ($code -eq 32 -or $code -eq 33) {
                return $true
            }
        }
        $Exception = $Exception.InnerException
    }
    return $false
}

function Limit-Text {
    param($Text)
    if ($null -eq $Text) {
        return $null
    }
    $value = ([string]$Text).TrimEnd([char]0)
    if ($value.Length -gt $maxText) {
        $value = $value.Substring(0, $maxText)
    }
    if ($value.Length -eq 0) {
        return $null
    }
    return $value
}

function ConvertFrom-MapiValue {
    # Outlook keeps string properties as REG_BINARY: 001f tags UTF-16LE, 001e tags ANSI.
    param($Value, [bool]$Unicode)
    if ($null -eq $Value) {
        return $null
    }
    if ($Value -is [byte[]]) {
        if ($Unicode) {
            return Limit-Text -Text ([System.Text.Encoding]::Unicode.GetString($Value))
        }
        return Limit-Text -Text ([System.Text.Encoding]::Default.GetString($Value))
    }
    return Limit-Text -Text $Value
}

function Get-MapiString {
    param($Key, [string]$UnicodeTag, [string]$AnsiTag)
    $text = $null
    if ($UnicodeTag) {
        $text = ConvertFrom-MapiValue -Value $Key.GetValue($UnicodeTag) -Unicode $true
    }
    if ($null -eq $text -and $AnsiTag) {
        $text = ConvertFrom-MapiValue -Value $Key.GetValue($AnsiTag) -Unicode $false
    }
    return $text
}

function Get-ProfileFacts {
    # One profile key: its Exchange accounts, cached mode and OST. $keys collects every key opened,
    # so that all are closed before a loaded copy is unloaded.
    param($ProfileKey, [System.Collections.ArrayList]$Keys)
    $accounts = @()
    $cached = $false
    $ostPath = $null
    foreach ($section in @(Get-ChildItem -LiteralPath $ProfileKey.PSPath -ErrorAction Stop)) {
        $null = $Keys.Add($section)
        if ($null -eq $ostPath) {
            $ostPath = Get-MapiString -Key $section -UnicodeTag '001f6610' -AnsiTag '001e6610'
        }
        $server = Get-MapiString -Key $section -UnicodeTag '001f6602' -AnsiTag '001e6602'
        if ($null -eq $server -or $accounts.Count -ge $maxAccounts) {
            continue
        }
        $flags = $section.GetValue('00036601')
        if ($flags -is [byte[]] -and $flags.Length -ge 1 -and ($flags[0] -band 0x80)) {
            $cached = $true
        }
        $mailbox = Get-MapiString -Key $section -UnicodeTag '001f6641' -AnsiTag '001e6603'
        $accounts += , @{ Server = $server; Mailbox = $mailbox }
    }
    $ostBytes = $null
    if ($null -ne $ostPath) {
        $ost = Get-Item -LiteralPath $ostPath -ErrorAction SilentlyContinue
        if ($null -ne $ost) {
            $ostBytes = [int64]$ost.Length
        }
    }
    return @{ Accounts = $accounts; CachedMode = $cached; OstPath = $ostPath; OstBytes = $ostBytes }
}

function Get-UserProfiles {
    # Every Outlook profile under one hive root ('Registry::HKEY_USERS\<name>').
    param([string]$Root, [System.Collections.ArrayList]$Keys)
    $found = @()
    $places = @()
    foreach ($version in $officeVersions) {
        $places += , @($version, ('{0}\Software\Microsoft\Office\{1}\Outlook' -f $Root, $version), 'Profiles')
    }
    $places += , @('MAPI', ('{0}\{1}' -f $Root, $mapiSubsystem), 'Profiles')
    foreach ($place in $places) {
        $outlookKey = Get-Item -LiteralPath $place[1] -ErrorAction SilentlyContinue
        if ($null -eq $outlookKey) {
            continue
        }
        $null = $Keys.Add($outlookKey)
        $default = Limit-Text -Text $outlookKey.GetValue('DefaultProfile')
        $profilesPath = '{0}\{1}' -f $place[1], $place[2]
        if (-not (Test-Path -LiteralPath $profilesPath)) {
            continue
        }
        foreach ($profileKey in @(Get-ChildItem -LiteralPath $profilesPath -ErrorAction Stop)) {
            $null = $Keys.Add($profileKey)
            if ($found.Count -ge $maxProfiles) {
                break
            }
            $name = Limit-Text -Text $profileKey.PSChildName
            $facts = Get-ProfileFacts -ProfileKey $profileKey -Keys $Keys
            $facts['Name'] = $name
            $facts['OfficeVersion'] = $place[0]
            $facts['Default'] = ($null -ne $default -and $name -eq $default)
            $found += , $facts
        }
    }
    return , $found
}

function Test-NewOutlook {
    param([string]$Root)
    $preferences = Get-ItemProperty -LiteralPath ('{0}\Software\Microsoft\Office\16.0\Outlook\Preferences' -f $Root) `
        -Name 'UseNewOutlook' -ErrorAction SilentlyContinue
    return ($null -ne $preferences -and [int]$preferences.UseNewOutlook -eq 1)
}

function Close-Keys {
    # reg.exe unload fails while this process holds a handle into the hive: close them all.
    param([System.Collections.ArrayList]$Keys)
    foreach ($key in $Keys) {
        $key.Close()
    }
    $Keys.Clear()
    [System.GC]::Collect()
    [System.GC]::WaitForPendingFinalizers()
}

$disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$env:SystemDrive'" -ErrorAction Stop
$freeBytes = [int64]$disk.FreeSpace
$outlookVersion = $null
$curVerKey = Get-Item -LiteralPath 'Registry::HKEY_CLASSES_ROOT\Outlook.Application\CurVer' -ErrorAction SilentlyContinue
if ($null -ne $curVerKey) {
    $progId = [string]$curVerKey.GetValue('')
    if ($progId -match '\.(\d+)$') {
        $outlookVersion = '{0}.0' -f $Matches[1]
    }
}

$rows = New-Object -TypeName System.Collections.ArrayList
$truncated = $false
$workDir = Join-Path -Path $env:TEMP -ChildPath ('cpuu-fleet-audit-{0}' -f $PID) -ErrorAction Stop

function Add-Row {
    param([hashtable]$Row)
    if ($rows.Count -ge $MaxRows) {
        return $false
    }
    $Row['ComputerName'] = $env:COMPUTERNAME
    $Row['FreeBytes'] = $freeBytes
    $Row['OutlookVersion'] = $outlookVersion
    $Row['Truncated'] = $false
    $null = $rows.Add($Row)
    return $true
}

$userProfiles = @(Get-CimInstance -ClassName Win32_UserProfile -Filter 'Special = FALSE' -ErrorAction Stop |
        Sort-Object -Property LocalPath)
if ($userProfiles.Count -gt $maxUsers) {
    $userProfiles = $userProfiles[0..($maxUsers - 1)]
    $truncated = $true
}
$index = 0
foreach ($userProfile in $userProfiles) {
    $index += 1
    $sid = [string]$userProfile.SID
    $user = $null
    try {
        $identifier = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $sid
        $user = Limit-Text -Text ($identifier.Translate([System.Security.Principal.NTAccount]).Value)
    }
    catch {
        $user = $null  # a deleted account: its SID still names the row
    }
    $hiveState = 'Loaded'
    $root = 'Registry::HKEY_USERS\{0}' -f $sid
    $mount = $null
    $keys = New-Object -TypeName System.Collections.ArrayList
    $profiles = @()
    $newOutlook = $false
    try {
        if (-not [bool]$userProfile.Loaded) {
            $hive = Join-Path -Path ([string]$userProfile.LocalPath) -ChildPath 'NTUSER.DAT'
            $hiveState = 'Missing'
            if (Test-Path -LiteralPath $hive -PathType Leaf) {
                $hiveState = 'Copied'
                $null = New-Item -ItemType Directory -Path $workDir -Force -ErrorAction Stop
                $copy = Join-Path -Path $workDir -ChildPath ('{0}.dat' -f $index)
                try {
                    # -Force: NTUSER.DAT is hidden, which Copy-Item skips without it.
                    Copy-Item -LiteralPath $hive -Destination $copy -Force -ErrorAction Stop
                }
                catch {
                    if (-not (Test-Locked -Exception $_.Exception)) {
                        throw
                    }
                    $hiveState = 'Locked'
                }
                if ($hiveState -eq 'Copied') {
                    $mountName = 'cpuu-fleet-audit-{0}-{1}' -f $PID, $index
                    $ErrorActionPreference = 'Continue'
                    $null = & "$env:SystemRoot\System32\reg.exe" load "HKU\$mountName" $copy 2>$null
                    $ErrorActionPreference = 'Stop'
                    if ($LASTEXITCODE -eq 0) {
                        $mount = $mountName
                        $root = 'Registry::HKEY_USERS\{0}' -f $mountName
                    }
                    else {
                        $hiveState = 'Failed'
                    }
                }
            }
        }
        if ($hiveState -eq 'Loaded' -or $hiveState -eq 'Copied') {
            $profiles = Get-UserProfiles -Root $root -Keys $keys
            $newOutlook = Test-NewOutlook -Root $root
        }
    }
    finally {
        Close-Keys -Keys $keys
        if ($null -ne $mount) {
            $ErrorActionPreference = 'Continue'
            $null = & "$env:SystemRoot\System32\reg.exe" unload "HKU\$mount" 2>$null
            $ErrorActionPreference = 'Stop'
        }
    }
    $userRow = @{ Sid = $sid; User = $user; HiveState = $hiveState; NewOutlook = $newOutlook }
    if ($profiles.Count -eq 0) {
        $row = $userRow.Clone()
        foreach ($name in 'Profile', 'OfficeVersion', 'Default', 'CachedMode', 'OstPath', 'OstBytes', 'Server', 'Mailbox') {
            $row[$name] = $null
        }
        if (-not (Add-Row -Row $row)) {
            $truncated = $true
        }
        continue
    }
    foreach ($outlookProfile in $profiles) {
        $accounts = @($outlookProfile.Accounts)
        if ($accounts.Count -eq 0) {
            $accounts = @(@{ Server = $null; Mailbox = $null })
        }
        foreach ($account in $accounts) {
            $row = $userRow.Clone()
            $row['Profile'] = $outlookProfile.Name
            $row['OfficeVersion'] = $outlookProfile.OfficeVersion
            $row['Default'] = [bool]$outlookProfile.Default
            $row['CachedMode'] = [bool]$outlookProfile.CachedMode
            $row['OstPath'] = $outlookProfile.OstPath
            $row['OstBytes'] = $outlookProfile.OstBytes
            $row['Server'] = $account.Server
            $row['Mailbox'] = $account.Mailbox
            if (-not (Add-Row -Row $row)) {
                $truncated = $true
            }
        }
    }
}
if (Test-Path -LiteralPath $workDir) {
    Remove-Item -LiteralPath $workDir -Recurse -Force -ErrorAction SilentlyContinue
}
if ($truncated -and $rows.Count -gt 0) {
    $rows[$rows.Count - 1]['Truncated'] = $true
}
foreach ($row in $rows) {
    $row
}
